"""Live plot of training loss and validation Dice (pyqtgraph, imported off the main thread)."""

from __future__ import annotations

from typing import Any

from qtpy.QtWidgets import QVBoxLayout, QWidget

PLOT_HEIGHT = 210


class LossPlot(QWidget):
    """Training loss per step (thin), per epoch (thick) and validation Dice per epoch."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.step_x: list[float] = []
        self.step_loss: list[float] = []
        self.epoch_x: list[float] = []
        self.epoch_loss: list[float] = []
        self.dice_x: list[float] = []
        self.dice: list[float] = []
        #: The pyqtgraph plot, made by :meth:`build` (importing pyqtgraph takes 0.2-0.5 s, so
        #: the dock imports it in its warm-up thread and builds the plot when that is done).
        self.plot: Any = None
        self.setMinimumHeight(PLOT_HEIGHT)
        self._layout = QVBoxLayout(self)
        self._layout.setContentsMargins(0, 0, 0, 0)

    @property
    def built(self) -> bool:
        return self.plot is not None

    def build(self) -> None:
        """Make the pyqtgraph plot (importing pyqtgraph here if the warm-up has not) and draw."""
        if self.plot is not None:
            return
        import pyqtgraph as pg

        self.plot = pg.PlotWidget()
        self.plot.setFixedHeight(PLOT_HEIGHT)
        self.plot.setBackground(None)
        self.plot.showGrid(x=True, y=True, alpha=0.2)
        self.plot.setLabel("bottom", "epoch")
        self.plot.addLegend(offset=(-5, 5), labelTextSize="8pt")
        self.plot.setYRange(0, 1.2)
        self._steps = self.plot.plot(pen=pg.mkPen((120, 160, 220), width=1))
        self._epochs = self.plot.plot(
            pen=pg.mkPen((60, 130, 230), width=2.5), symbol="o", symbolSize=5, name="training loss"
        )
        self._dice = self.plot.plot(
            pen=pg.mkPen((240, 150, 40), width=2.5),
            symbol="s",
            symbolSize=5,
            name="validation Dice",
        )
        self._layout.addWidget(self.plot)
        self.redraw()

    def clear(self) -> None:
        for values in (
            self.step_x,
            self.step_loss,
            self.epoch_x,
            self.epoch_loss,
            self.dice_x,
            self.dice,
        ):
            values.clear()
        self.redraw()

    def add_step(self, x: float, loss: float) -> None:
        self.step_x.append(x)
        self.step_loss.append(loss)

    def add_epoch(self, x: float, loss: float, dice: float | None) -> None:
        self.epoch_x.append(x)
        self.epoch_loss.append(loss)
        if dice is not None:
            self.dice_x.append(x)
            self.dice.append(dice)

    def redraw(self) -> None:
        if self.plot is None:
            return
        self._steps.setData(self.step_x, self.step_loss)
        self._epochs.setData(self.epoch_x, self.epoch_loss)
        self._dice.setData(self.dice_x, self.dice)
        top = max([1.0, *self.step_loss[-200:], *self.epoch_loss])
        self.plot.setYRange(0, min(top, 5.0) * 1.05, padding=0)
