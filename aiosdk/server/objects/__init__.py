"""The object store: buckets in namespaces, objects by key in a bucket (see :mod:`.store`)."""
