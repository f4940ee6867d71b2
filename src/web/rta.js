// The rta page.
"use strict";
markReady();
