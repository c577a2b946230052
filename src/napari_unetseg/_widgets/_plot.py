"""Live plot of training loss and validation Dice, drawn with QPainter.

A plotting library is not worth its import here: pyqtgraph took 0.2-0.5 s to import, holding
napari's event loop for up to 0.27 s even from a background thread.
"""

from __future__ import annotations

import math

from qtpy.QtCore import QPointF, QRectF, Qt
from qtpy.QtGui import QColor, QPainter, QPainterPath, QPen
from qtpy.QtWidgets import QWidget

PLOT_HEIGHT = 190
STEP_COLOR = QColor(120, 160, 220)
LOSS_COLOR = QColor(60, 130, 230)
DICE_COLOR = QColor(240, 150, 40)


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
        self.top = 1.2
        self.setMinimumHeight(PLOT_HEIGHT)
        self.setMaximumHeight(PLOT_HEIGHT)
        self.setMinimumWidth(160)

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
        """Fit the y range to the recent losses (1 to 5) and repaint."""
        finite = [v for v in [*self.step_loss[-200:], *self.epoch_loss] if math.isfinite(v)]
        self.top = min(max([1.0, *finite]), 5.0) * 1.05
        self.update()

    # ------------------------------------------------------------------ drawing

    def _area(self) -> QRectF:
        """The rectangle of the data, inside room for tick labels and the legend."""
        metrics = self.fontMetrics()
        left = metrics.horizontalAdvance("0.00") + 8
        bottom = metrics.height() * 2 + 4
        return QRectF(left, metrics.height() + 6, self.width() - left - 8, self.height() - bottom)

    def paintEvent(self, event: object) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        area = self._area()
        x_max = max([1.0, *self.step_x, *self.epoch_x])
        text = self.palette().color(self.foregroundRole())

        def point(x: float, y: float) -> QPointF:
            y = min(max(y, 0.0), self.top)
            return QPointF(
                area.left() + area.width() * x / x_max,
                area.bottom() - area.height() * y / self.top,
            )

        self._draw_axes(painter, area, x_max, text)
        self._draw_line(painter, self.step_x, self.step_loss, point, STEP_COLOR, 1.0)
        self._draw_line(painter, self.epoch_x, self.epoch_loss, point, LOSS_COLOR, 2.5, "o")
        self._draw_line(painter, self.dice_x, self.dice, point, DICE_COLOR, 2.5, "s")
        self._draw_legend(painter, area, text)
        painter.end()

    def _draw_axes(self, painter: QPainter, area: QRectF, x_max: float, text: QColor) -> None:
        grid = QColor(text)
        grid.setAlpha(50)
        metrics = self.fontMetrics()
        for i in range(5):
            value = self.top * i / 4
            y = area.bottom() - area.height() * i / 4
            painter.setPen(QPen(grid, 1))
            painter.drawLine(QPointF(area.left(), y), QPointF(area.right(), y))
            painter.setPen(text)
            painter.drawText(
                QRectF(0, y - metrics.height() / 2, area.left() - 4, metrics.height()),
                int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter),
                f"{value:.2f}",
            )
        ticks = max(1, math.ceil(x_max))
        every = max(1, math.ceil(ticks / 8))
        for epoch in range(0, ticks + 1, every):
            x = area.left() + area.width() * epoch / x_max
            if x > area.right() + 1:
                break
            painter.setPen(QPen(grid, 1))
            painter.drawLine(QPointF(x, area.top()), QPointF(x, area.bottom()))
            painter.setPen(text)
            painter.drawText(
                QRectF(x - 20, area.bottom() + 2, 40, metrics.height()),
                int(Qt.AlignmentFlag.AlignHCenter),
                str(epoch),
            )
        painter.drawText(
            QRectF(
                area.left(), area.bottom() + metrics.height() + 2, area.width(), metrics.height()
            ),
            int(Qt.AlignmentFlag.AlignHCenter),
            "epoch",
        )

    @staticmethod
    def _draw_line(
        painter: QPainter,
        xs: list[float],
        ys: list[float],
        point: object,
        color: QColor,
        width: float,
        symbol: str = "",
    ) -> None:
        if not xs:
            return
        points = [point(x, y) for x, y in zip(xs, ys, strict=False)]  # type: ignore[operator]
        path = QPainterPath(points[0])
        for p in points[1:]:
            path.lineTo(p)
        painter.setPen(QPen(color, width))
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.drawPath(path)
        if not symbol:
            return
        painter.setBrush(color)
        for p in points:
            if symbol == "o":
                painter.drawEllipse(p, 2.5, 2.5)
            else:
                painter.drawRect(QRectF(p.x() - 2.5, p.y() - 2.5, 5, 5))

    def _draw_legend(self, painter: QPainter, area: QRectF, text: QColor) -> None:
        metrics = self.fontMetrics()
        x = area.left()
        y = 2 + metrics.ascent()
        for label, color in (("training loss", LOSS_COLOR), ("validation Dice", DICE_COLOR)):
            painter.setPen(QPen(color, 2.5))
            painter.drawLine(
                QPointF(x, y - metrics.ascent() / 3), QPointF(x + 14, y - metrics.ascent() / 3)
            )
            painter.setPen(text)
            painter.drawText(QPointF(x + 18, y), label)
            x += 18 + metrics.horizontalAdvance(label) + 14
