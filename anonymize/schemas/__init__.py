"""Input contracts and output schemas, as YAML files shipped with the package."""
