"""Backends run deployed pipeline versions behind one protocol (`base.Backend`): `local` serves them with threads of
this process; the data plane and the composition root use nothing but the protocol."""
