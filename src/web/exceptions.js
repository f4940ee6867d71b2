// The exceptions page.
"use strict";
markReady();
