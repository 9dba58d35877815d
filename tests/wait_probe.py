"""Under mpirun -n 2: rank 1 sends after WAIT_S seconds while rank 0 waits for it through
transport.complete, spinning and then polite; rank 0 prints the CPU seconds each wait used."""
import time

import numpy as np

from fobsgd_mpi import transport

WAIT_S = 2.0

comm = transport.mpi().COMM_WORLD
buf = np.zeros(4, np.float32)
for polite in (False, True):
    if comm.Get_rank() == 0:
        cpu = time.process_time()
        transport.complete(comm.Irecv(buf, source=1), polite)
        print(f"polite={polite} cpu_s={time.process_time() - cpu:.3f} got={buf[0]:g}")
    else:
        buf[0] = 1 + polite
        time.sleep(WAIT_S)
        comm.Send(buf, dest=0)
