"""Backends run deployed pipeline versions behind one protocol (`base.Backend`): `local` serves them with threads of
this process, `ray` as Ray Serve replicas (`ray.py`, imported only when asked for); `router.Backends` sends each
pipeline to the one its deployment names. The data plane and the composition root use nothing but the protocol."""
