"""The web dashboard, served by the controller under ``/ui/`` (README
"Dashboard"): sign-in with the controller's token for a session cookie, the
pages' static files, one compact live snapshot per scale set shared by every
open dashboard, and the upgrade actions behind a CSRF token."""
