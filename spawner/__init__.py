"""Code that runs inside the hub: the spawner behind "Start my Server" and the authenticator."""
