import { useEffect, useState } from 'preact/hooks';
import { api } from '../api';
import type { CloudEvent, StoredEvent } from '../types';
import { ErrorNote, JsonBlock } from './ui';

/**
 * An opened tail line's or dead letter's event, read from its partition only when opened
 * (`GET /partitions/{p}/events?from=<offset>&limit=1`): lists keep no events, which may be MiBs each.
 */
export function WholeEvent(props: { partition: number; offset: number }) {
  const { partition, offset } = props;
  const [found, setFound] = useState<{ event?: CloudEvent; error?: string }>({});
  useEffect(() => {
    const controller = new AbortController();
    api
      .get<{ events: StoredEvent[]; corruptOffset?: number }>(`partitions/${partition}/events?from=${offset}&limit=1`, controller.signal)
      .then(
        // A page starts at the next offset still stored when this one is gone, and names a corrupt record it stops at.
        ({ events: [first], corruptOffset }) =>
          setFound(
            first?.offset === offset
              ? { event: first.event }
              : corruptOffset === offset
                ? {
                    error: `${partition}:${offset} is corrupt: its stored record fails its checksum and is never served (the gateway's log names it).`,
                  }
                : { error: `${partition}:${offset} is no longer in the log (retention).` },
          ),
        (err: Error) => {
          if (err.name !== 'AbortError') setFound({ error: err.message });
        },
      );
    return () => controller.abort();
  }, [partition, offset]);
  if (found.error) return <ErrorNote message={found.error} />;
  return found.event ? <JsonBlock value={found.event} /> : <p class="dim">Reading the event…</p>;
}
