"""supervisor-meshx: Consul service-mesh sidecar proxies run by supervisord."""

__version__ = "0.2.0"
API_VERSION = "1.0"
