"""Work that runs beside serving: file inference, and the scheduler that runs monitors on time."""
