// A small time series of one numeric variable, drawn by uPlot (loaded as the
// global uPlot by index.html). It keeps the last MAX_POINTS values.

const MAX_POINTS = 600;

export class Series {
  constructor(container, name) {
    this.xs = [];
    this.ys = [];
    this.container = container;
    this.plot = new globalThis.uPlot(
      {
        title: name,
        width: 400,
        height: 160,
        legend: { show: false },
        scales: { x: { time: true } },
        axes: [{ space: 60 }, { size: 56 }],
        series: [{}, { label: name, stroke: "#2563eb", width: 1.5, spanGaps: false, points: { show: false } }],
      },
      [this.xs, this.ys],
      container,
    );
    this.plot.root.setAttribute("aria-hidden", "true");
  }

  // push adds a point: t in seconds since the epoch, y a number or null (a gap).
  push(t, y) {
    if (this.xs.length && t < this.xs[this.xs.length - 1]) t = this.xs[this.xs.length - 1];
    this.xs.push(t);
    this.ys.push(y);
    if (this.xs.length > MAX_POINTS) {
      this.xs.splice(0, this.xs.length - MAX_POINTS);
      this.ys.splice(0, this.ys.length - MAX_POINTS);
    }
    this.plot.setData([this.xs, this.ys]);
  }

  get length() {
    return this.xs.length;
  }

  destroy() {
    this.plot.destroy();
  }
}
