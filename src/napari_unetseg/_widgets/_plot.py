"""Live plot of training loss and validation Dice (pyqtgraph, imported when first shown)."""

from __future__ import annotations

from qtpy.QtWidgets import QVBoxLayout, QWidget


class LossPlot(QWidget):
    """Training loss per step (thin), per epoch (thick) and validation Dice per epoch."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        import pyqtgraph as pg

        self.step_x: list[float] = []
        self.step_loss: list[float] = []
        self.epoch_x: list[float] = []
        self.epoch_loss: list[float] = []
        self.dice_x: list[float] = []
        self.dice: list[float] = []
        self.plot = pg.PlotWidget()
        self.plot.setFixedHeight(210)
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
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.plot)

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
        self._steps.setData(self.step_x, self.step_loss)
        self._epochs.setData(self.epoch_x, self.epoch_loss)
        self._dice.setData(self.dice_x, self.dice)
        top = max([1.0, *self.step_loss[-200:], *self.epoch_loss])
        self.plot.setYRange(0, min(top, 5.0) * 1.05, padding=0)
