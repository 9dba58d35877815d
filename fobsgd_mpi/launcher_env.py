"""What MPI launchers tell a process before MPI starts: its rank, the world size, the ranks on its node."""
import os

# (rank, world size) variables MPI launchers set: MPICH's Hydra, Open MPI, PMIx (a rank only), SLURM
LAUNCHER_ENV = (("PMI_RANK", "PMI_SIZE"), ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"), ("PMIX_RANK", None),
                ("SLURM_PROCID", "SLURM_NTASKS"))
# ranks on this node: MPICH's Hydra, Open MPI
LOCAL_SIZE_ENV = ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE")


def rank_from_environment():
    """This process's rank as the launcher set it (0 when none did). A variable that is not a number
    (left over or set by hand) is passed over: the callers only decide which rank prints an error."""
    for key, _ in LAUNCHER_ENV:
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key])
    return 0


def local_ranks():
    """How many ranks share this node (1 when no launcher says)."""
    for key in LOCAL_SIZE_ENV:
        if os.environ.get(key, "").isdigit():
            return max(1, int(os.environ[key]))
    return 1
