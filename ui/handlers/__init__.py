"""Plain functions behind the UI: values in, values out (dicts keyed by the tab's component names)."""
