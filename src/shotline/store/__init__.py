"""What is kept: the database (schema, migrations, locks), the content-addressed file
store, the ledger and budgets, the per-shot recovery points, and the render state machine
with its outbox. Every read-then-write that guards money or a claim lives here.
"""
