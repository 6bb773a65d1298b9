// How figures read on the page: whole numbers grouped, durations in words, rates per second.

const whole = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
const short = new Intl.NumberFormat("en-US", { maximumFractionDigits: 1 });

export const DASH = "–";

export function count(n) {
  return n === null || n === undefined ? DASH : whole.format(n);
}

export function rate(perSecond) {
  if (perSecond === null || perSecond === undefined) return DASH;
  return `${short.format(perSecond)}/s`;
}

export function percent(done, total) {
  // Never rounds up to 100 % before the last one is done; an unknown total (null: the
  // tracks are still being counted) is 0 %, not 100.
  if (total === null || total === undefined) return 0;
  if (!total) return 100;
  return done >= total ? 100 : Math.floor((1000 * done) / total) / 10;
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return DASH;
  const s = Math.round(seconds);
  if (s < 1) return "< 1 s";
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, "0")} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

export function clock(iso) {
  if (!iso) return DASH;
  const when = new Date(iso);
  return Number.isNaN(when.getTime()) ? DASH : when.toLocaleTimeString([], { hour12: false });
}

export function ago(iso, now = Date.now()) {
  if (!iso) return DASH;
  const seconds = (now - new Date(iso).getTime()) / 1000;
  return seconds < 5 ? "just now" : `${duration(seconds)} ago`;
}

export function playTime(seconds) {
  // A track's length as players show it: 3:07, 1:02:33.
  if (!seconds || !Number.isFinite(seconds)) return DASH;
  const s = Math.round(seconds);
  const mmss = `${Math.floor((s % 3600) / 60)}:${String(s % 60).padStart(2, "0")}`;
  return s >= 3600 ? `${Math.floor(s / 3600)}:${mmss.padStart(5, "0")}` : mmss;
}
