// The jobs page.
"use strict";
markReady();
