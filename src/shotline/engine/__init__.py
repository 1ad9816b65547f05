"""The engine: plan -> shots -> stitch. It runs shots through a provider, keeps the money
straight through the store, and joins the clips into one verified file. It never imports
the service (HTTP, webhooks delivery, tenants): the service calls it.
"""
