"""Version data as YAML: image sets, package sets, default sources. No code lives here."""
