"""One router per resource, included by `service.api.app`."""
