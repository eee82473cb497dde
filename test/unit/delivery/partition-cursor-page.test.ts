import { createCursor, itemAtCursor } from '../../../src/delivery/partition-cursor';
import { openStoreAt } from '../../helpers/log-store';
import { cleanupTmpDirs, tmpDir } from '../../helpers/tmp';

/**
 * A subscription reads the log a page per partition and holds the page until it has delivered it. Each
 * subscription holds its own page, so a page of large events is cut by size (receiver probe: 14
 * subscriptions of 256 KiB events held 1.5 GB). Real log, real index.
 */
afterAll(cleanupTmpDirs);

async function pageHeld(dataBytes: number, count: number): Promise<number> {
  const { store, close } = openStoreAt(tmpDir());
  try {
    const bytes = Buffer.alloc(dataBytes, 'x');
    await store.append(
      Array.from({ length: count }, (_, i) => ({
        attributes: { specversion: '1.0', id: `e${i}`, source: '/page', type: 't', datacontenttype: 'application/octet-stream' },
        data: { kind: 'bytes' as const, bytes },
      })),
    );
    const part = createCursor(0, undefined);
    const item = itemAtCursor(part, store);
    expect(item).toMatchObject({ kind: 'event', event: { offset: 0 } });
    return part.buffer.length;
  } finally {
    await close();
  }
}

describe('a partition cursor page', () => {
  it('holds up to 64 small events', async () => {
    expect(await pageHeld(100, 80)).toBe(64);
  });

  it('holds large events up to 256 KiB of them (one at least): 64 of 256 KiB were 16 MiB per subscription and partition', async () => {
    expect(await pageHeld(100 * 1024, 10)).toBe(2);
    expect(await pageHeld(300 * 1024, 5)).toBe(1);
  });
});
