"""File-level front doors: load, call the core, save. The CLI, the DVC stages and the Prefect tasks all
call these and pass paths, never models; nothing else in the package reads or writes files."""
