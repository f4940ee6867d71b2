// The reports page.
"use strict";
markReady();
