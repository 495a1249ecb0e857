from muni.flow.paths import LinearPath, flow_matching_loss
from muni.flow.prior import FlowPrior
from muni.flow.samplers import SOLVERS, euler, heun, integrate
from muni.flow.velocity import VelocityMLP, timestep_embedding

__all__ = ["LinearPath", "flow_matching_loss", "FlowPrior", "SOLVERS", "euler", "heun", "integrate",
           "VelocityMLP", "timestep_embedding"]
