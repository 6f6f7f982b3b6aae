// The API key of this browser tab: kept in sessionStorage (gone when the tab closes), sent
// only as an Authorization header, never put in a URL.
const STORAGE_KEY = "noisefa.apiKey";

/** Move a `#key=KEY` sign-in link's key into session storage and out of the address bar
 * (and its history entry). True when the address held one. */
export function takeKeyFromFragment() {
  const match = /^#key=([^&]*)/.exec(location.hash);
  if (!match) return false;
  history.replaceState(null, "", `${location.pathname}${location.search}#/jobs`);
  const key = decodeURIComponent(match[1]).trim();
  if (key) sessionStorage.setItem(STORAGE_KEY, key);
  return Boolean(key);
}

export const apiKey = () => sessionStorage.getItem(STORAGE_KEY);
export const storeKey = (key) => sessionStorage.setItem(STORAGE_KEY, key.trim());
export const forgetKey = () => sessionStorage.removeItem(STORAGE_KEY);
