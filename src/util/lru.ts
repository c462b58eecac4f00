/**
 * An LRU map bounded by entry count that allocates as it fills. lru-cache's `max` option allocates
 * its slot arrays for all `max` entries up front: 2.6 MiB of memory per 100 000-entry cache from
 * start-up on, whether the cache ever fills or not (the mirror's seven such caches held 18 MiB and
 * took 110 ms to start). Counting each entry as size 1 against `maxSize` bounds it the same way
 * and grows the arrays with use.
 */
import { LRUCache } from 'lru-cache';

export function boundedLru<K extends NonNullable<unknown>, V extends NonNullable<unknown>>(maxEntries: number): LRUCache<K, V> {
  return new LRUCache<K, V>({ maxSize: Math.max(1, maxEntries), sizeCalculation: () => 1 });
}
