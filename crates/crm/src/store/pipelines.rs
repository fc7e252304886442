//! Pipelines and their stages.
