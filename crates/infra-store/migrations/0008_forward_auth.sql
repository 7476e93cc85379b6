-- Destinations the server decides for itself, for a proxy that keeps its
-- own data path (forward-auth, Envoy ext_authz): no connector serves them
-- (`connector` is empty), and browsers reach them at this public origin.
ALTER TABLE destinations ADD COLUMN public_url TEXT;
