"""The pure core: no asyncio, sqlite, httpx, files or clock reads.

Job states and the one transition table with the decisions about them (`_states`),
envelope and task-record parsing (`_envelope`), the poll schedule (`_schedule`), run
settings (`_settings`) and the run summary (`_summary`).
"""
