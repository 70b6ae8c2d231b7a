// The price chart of the selected instrument: candles of the chosen interval and volume, drawn by
// TradingView Lightweight Charts (vendored, see vendor/README.md), times shown in IST.

// The library draws times as UTC; shifting by IST's fixed offset (no daylight saving) makes
// the axis read Indian market hours whatever the viewer's time zone.
const IST_OFFSET_SECONDS = 5.5 * 3600;

const UP = "#22c55e";
const DOWN = "#ef4444";

function bar(c) {
  return { time: c.time + IST_OFFSET_SECONDS, open: c.open, high: c.high, low: c.low, close: c.close };
}

function volumeBar(c) {
  return {
    time: c.time + IST_OFFSET_SECONDS,
    value: c.volume || 0,
    color: c.close >= c.open ? "rgba(34,197,94,0.35)" : "rgba(239,68,68,0.35)",
  };
}

function intervalWords(seconds) {
  if (seconds < 60) return `${seconds}-second`;
  return seconds === 60 ? "one-minute" : `${seconds / 60}-minute`;
}

export class PriceChart {
  constructor(container) {
    const LW = window.LightweightCharts;
    this.available = !!LW;
    this.container = container;
    if (!this.available) {
      container.textContent = "Chart library failed to load";
      return;
    }
    this.chart = LW.createChart(container, {
      autoSize: true,
      layout: {
        background: { type: "solid", color: "transparent" },
        textColor: "#8b98a9",
        fontFamily: "Inter, 'Segoe UI', Roboto, system-ui, sans-serif",
        fontSize: 11,
        // The logo is a link whose style the library injects inline, which our CSP forbids;
        // the page footer credits TradingView instead.
        attributionLogo: false,
      },
      grid: {
        vertLines: { color: "rgba(148,163,184,0.07)" },
        horzLines: { color: "rgba(148,163,184,0.07)" },
      },
      rightPriceScale: { borderColor: "rgba(148,163,184,0.2)" },
      timeScale: {
        borderColor: "rgba(148,163,184,0.2)",
        timeVisible: true,
        secondsVisible: false,
        rightOffset: 4,
      },
      crosshair: { mode: LW.CrosshairMode ? LW.CrosshairMode.Normal : 0 },
    });
    this.candles = this.chart.addSeries(LW.CandlestickSeries, {
      upColor: UP,
      downColor: DOWN,
      borderVisible: false,
      wickUpColor: UP,
      wickDownColor: DOWN,
    });
    this.candles.priceScale().applyOptions({ scaleMargins: { top: 0.08, bottom: 0.24 } });
    this.volume = this.chart.addSeries(LW.HistogramSeries, {
      priceFormat: { type: "volume" },
      priceScaleId: "",
      lastValueVisible: false,
      priceLineVisible: false,
    });
    this.volume.priceScale().applyOptions({ scaleMargins: { top: 0.8, bottom: 0 } });
    this.prevCloseLine = null;
    this.bars = 0;
  }

  /** Second candles need the seconds on the time axis; minute candles read better without. */
  setInterval(seconds) {
    this.container.setAttribute("aria-label", `Price chart, ${intervalWords(seconds)} candles`);
    if (!this.available) return;
    this.chart.applyOptions({ timeScale: { secondsVisible: seconds < 60 } });
  }

  /** Replace everything (a new instrument, history arrived, or an earlier minute corrected). */
  setCandles(candles) {
    if (!this.available) return;
    this.candles.setData(candles.map(bar));
    this.volume.setData(candles.map(volumeBar));
    if (this.bars === 0 && candles.length) this.chart.timeScale().scrollToRealTime();
    this.bars = candles.length;
  }

  /** The last candle changed or a new one started. */
  updateLast(candle) {
    if (!this.available || !candle) return;
    this.candles.update(bar(candle));
    this.volume.update(volumeBar(candle));
    this.bars = Math.max(this.bars, 1);
  }

  /** A dashed line at the previous close, the reference for the day's change. */
  setPreviousClose(cp) {
    if (!this.available) return;
    if (this.prevCloseLine) {
      if (this.prevCloseLine.options().price === cp) return;
      this.candles.removePriceLine(this.prevCloseLine);
      this.prevCloseLine = null;
    }
    if (cp) {
      this.prevCloseLine = this.candles.createPriceLine({
        price: cp,
        color: "rgba(148,163,184,0.55)",
        lineWidth: 1,
        lineStyle: 2,
        axisLabelVisible: true,
        title: "prev close",
      });
    }
  }

  /** Indices trade no volume: their histogram would be a flat line of zeros. */
  setVolumeVisible(visible) {
    if (!this.available) return;
    this.volume.applyOptions({ visible });
    this.candles.priceScale().applyOptions({
      scaleMargins: visible ? { top: 0.08, bottom: 0.24 } : { top: 0.08, bottom: 0.08 },
    });
  }

  setPrecision(decimals) {
    if (!this.available) return;
    const minMove = Number((1 / 10 ** decimals).toFixed(decimals));
    this.candles.applyOptions({ priceFormat: { type: "price", precision: decimals, minMove } });
  }

  clear() {
    if (!this.available) return;
    this.setCandles([]);
    this.setPreviousClose(0);
  }
}
