// The sign-in page.
"use strict";
markReady();
