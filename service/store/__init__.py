"""The vector store package: `types` (records, the Backend protocol, errors), the engines
(`edge`: Qdrant Edge, `client`: a Qdrant server or qdrant-client's local mode, `none`), the
store process that hosts an embedded engine (`process`, `owner`, `remote`, `wire`), start-up
checks (`check`), filters (`filters`) and the `Store` facade (`facade`, built by `factory`).
Arrows point one way: API -> facade -> backends -> types."""
