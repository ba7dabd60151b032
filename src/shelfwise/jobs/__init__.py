"""Background work on Procrastinate: tasks, periodic schedules, the worker, the admin API."""
