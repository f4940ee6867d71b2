// The agent page.
"use strict";
markReady();
