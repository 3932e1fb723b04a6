"""Ray Serve adapters: one deployment class per file, composed in deployments.app.build_app."""
