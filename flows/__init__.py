"""Prefect flows of unierase, run from the repo root (not shipped in the wheel).

python -m flows.erasure      # one erasure request (make demo)
unierase schedule --cron "0 2 * * *"   # serves flows.scheduled: the request inbox, on a schedule
"""
