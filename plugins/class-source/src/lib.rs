//! The class-source serializer plugin (being written; see its issue).
