"""One run, from the server to the upload: the experiment's straight line and its parts."""
