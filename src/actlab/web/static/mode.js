window.ACTLAB_STATIC = false;   // the static export (actlab explain export-html) writes true here
