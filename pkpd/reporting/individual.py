"""Individual fits: per subject, observations, individual median prediction and 90% band.

The band is over posterior draws of the subject's parameters (individual prediction
without residual error) on a dense time grid; one page (figure) per ``per_page``
subjects and output.
"""

from __future__ import annotations

import numpy as np

from .figures import log_axis, new_figure

__all__ = ["individual_pages"]


def individual_pages(sim, output: str, *, per_page: int = 12, log: bool = True, unit: str = "",
                     ncols: int = 4) -> list:
    """Figures of the individual fits of ``output`` (a list, one per page).

    Parameters
    ----------
    sim : PosteriorSimulation
    output : str
    per_page : int
        Subjects per page.
    log : bool
        Log y axis.
    """
    frame = sim.frame[sim.frame["OUTPUT"] == output]
    grid = sim.grid[output]  # [B, n_real, T]
    q = np.nanquantile(grid, [0.05, 0.5, 0.95], axis=0)  # [3, n_real, T]
    pages = []
    ids = list(sim.ids)
    for start in range(0, len(ids), max(1, per_page)):
        chunk = ids[start:start + per_page]
        nc = min(ncols, len(chunk))
        nr = -(-len(chunk) // nc)
        fig = new_figure(3.2 * nc, 2.5 * nr + 0.4)
        axes = np.atleast_1d(fig.subplots(nr, nc, squeeze=False).ravel())
        for ax, sid in zip(axes, chunk):
            i = ids.index(sid)
            d = sim.grid_t[i] / 24.0
            ax.fill_between(d, q[0, i], q[2, i], color="C0", alpha=0.25, lw=0, label="90% band")
            ax.plot(d, q[1, i], color="C0", lw=1.3, label="IPRED median")
            rows = frame[frame["ID"] == sid]
            c = rows["CENS"].to_numpy(bool)
            ax.plot(rows["TIME"].to_numpy(float)[~c] / 24.0, rows["DV"].to_numpy(float)[~c], "o", color="k",
                    ms=3, label="observed")
            if c.any():
                ax.plot(rows["TIME"].to_numpy(float)[c] / 24.0, rows["LLOQ"].to_numpy(float)[c], "v", color="C3",
                        mfc="none", ms=4, label="< LLOQ")
            if log:
                log_axis(ax, "y")
            ax.set_title(f"ID {sid}", fontsize=9)
            ax.set_xlabel("time (days)", fontsize=8)
            ax.set_ylabel(f"{output} ({unit})" if unit else output, fontsize=8)
            ax.tick_params(labelsize=7)
        for ax in axes[len(chunk):]:
            ax.set_visible(False)
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, fontsize=7, loc="outside lower center", ncol=len(labels))
        fig.suptitle(f"Individual fits: {output} (subjects {start + 1}-{start + len(chunk)} of {len(ids)})",
                     fontsize=10)
        pages.append(fig)
    return pages
