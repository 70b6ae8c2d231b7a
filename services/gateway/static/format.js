// Number and time formatting for an Indian market screen: en-IN grouping (1,23,45,678),
// lakh/crore for large quantities, times in IST whatever the viewer's own time zone.

const DASH = "\u2014";

const priceFormats = new Map();

function priceFormat(decimals) {
  let f = priceFormats.get(decimals);
  if (!f) {
    f = new Intl.NumberFormat("en-IN", {
      minimumFractionDigits: decimals,
      maximumFractionDigits: decimals,
    });
    priceFormats.set(decimals, f);
  }
  return f;
}

const intFormat = new Intl.NumberFormat("en-IN", { maximumFractionDigits: 0 });

export function price(value, decimals = 2) {
  if (value === undefined || value === null || !Number.isFinite(value)) return DASH;
  return priceFormat(decimals).format(value);
}

export function signed(value, decimals = 2) {
  if (value === undefined || value === null || !Number.isFinite(value)) return DASH;
  const text = priceFormat(decimals).format(Math.abs(value));
  if (value > 0) return "+" + text;
  if (value < 0) return "\u2212" + text;
  return text;
}

export function percent(value) {
  if (value === undefined || value === null || !Number.isFinite(value)) return DASH;
  return signed(value, 2) + "%";
}

export function integer(value) {
  if (value === undefined || value === null || !Number.isFinite(value)) return DASH;
  return intFormat.format(value);
}

/** Quantities and volumes: full digits below a lakh, then L (1e5) and Cr (1e7). */
export function quantity(value) {
  if (value === undefined || value === null || !Number.isFinite(value)) return DASH;
  const abs = Math.abs(value);
  if (abs >= 1e7) return priceFormat(2).format(value / 1e7) + " Cr";
  if (abs >= 1e5) return priceFormat(2).format(value / 1e5) + " L";
  return intFormat.format(value);
}

export function decimal(value, decimals = 4) {
  if (value === undefined || value === null || !Number.isFinite(value)) return DASH;
  return priceFormat(decimals).format(value);
}

const timeFormat = new Intl.DateTimeFormat("en-IN", {
  timeZone: "Asia/Kolkata",
  hour: "2-digit",
  minute: "2-digit",
  second: "2-digit",
  hour12: false,
});

const dateTimeFormat = new Intl.DateTimeFormat("en-IN", {
  timeZone: "Asia/Kolkata",
  day: "2-digit",
  month: "short",
  hour: "2-digit",
  minute: "2-digit",
  hour12: false,
});

/** hh:mm:ss IST of an epoch-milliseconds time. */
export function timeIst(ms) {
  if (!ms) return DASH;
  return timeFormat.format(new Date(ms));
}

/** "25 Nov, 03:30 IST" of an epoch-milliseconds time. */
export function dateTimeIst(ms) {
  if (!ms) return DASH;
  return dateTimeFormat.format(new Date(ms)) + " IST";
}

export { DASH };
