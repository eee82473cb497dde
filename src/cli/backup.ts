import { Option, type Command } from 'commander';
import { createOutput, shown, type CliStreams } from './output';
import { ReportedError, UsageError } from './errors';

const DEFAULT_DATA_DIR = './data';
const dataDirOption = () =>
  new Option('--data-dir <dir>', "the gateway's data dir (the local engine's HERALD_DATA_DIR)")
    .env('HERALD_DATA_DIR')
    .default(DEFAULT_DATA_DIR);

/** As the gateway reads HERALD_DATA_DIR: set but empty (a templated env file) is unset, so `./data`. */
const dataDirOf = (options: { dataDir: string }): string => (options.dataDir === '' ? DEFAULT_DATA_DIR : options.dataDir);

/** An empty path argument (an unset `"$DEST"` in a script) would name the current directory: refused, nothing touched. */
function requirePath(value: string, what: string): void {
  if (value.trim() === '') throw new UsageError(`${what} is empty: give a directory`);
}

/**
 * `herald backup` and `herald restore`: files on this machine, not requests to a gateway (so
 * --url, --api-key and --timeout do not apply). The storage module is loaded only here, so the
 * client commands start without SQLite.
 */
export function registerBackup(program: Command, streams: CliStreams): void {
  program
    .command('backup')
    .summary('copy a local data dir while the gateway runs (or not): consistent, without index.db')
    .argument('<dest>', 'a new directory for the backup')
    .addOption(dataDirOption())
    .addHelpText(
      'after',
      '\nherald.db is copied by SQLite (VACUUM INTO), then the log; the backup is written beside <dest> and renamed\n' +
        'into place when whole. Restore it with `herald restore`.\n\nExample:\n  herald backup --data-dir ./data /backups/herald-2026-12-04',
    )
    .action(async (dest: string, options: { dataDir: string }, command: Command) => {
      const out = createOutput(streams, { json: command.optsWithGlobals<{ json?: boolean }>().json === true });
      const { backupDataDir } = await import('../backup');
      (await import('../durable-fs')).createOwnerOnly();
      requirePath(dest, '<dest>');
      const started = Date.now();
      const manifest = await run('backup', () => backupDataDir(dataDirOf(options), dest));
      if (out.json) return out.document(manifest);
      const bytes = manifest.files.reduce((sum, f) => sum + f.bytes, 0);
      out.line(
        `backed up ${manifest.source} to ${dest}: ${manifest.files.length} files, ${formatBytes(bytes)} in ${Date.now() - started} ms`,
      );
      if (manifest.segmentsDroppedByRetention > 0) {
        out.note(`retention deleted log segments during the copy: the ${manifest.segmentsDroppedByRetention} oldest were left out`);
      }
    });

  program
    .command('restore')
    .summary('make an empty data dir a copy of a backup (stop the gateway first)')
    .argument('<backup>', 'a directory written by `herald backup`')
    .addOption(dataDirOption())
    .addHelpText(
      'after',
      '\nThe data dir must be absent or empty: move the old one aside first. The first start rebuilds index.db from\n' +
        'the log. Every subscription gets a new seek generation, so webhook-ids of deliveries made after the restore\n' +
        'differ from those the backed-up gateway sent after the backup (see the README, "Backup and restore").\n\n' +
        'Example:\n  herald restore --data-dir ./data /backups/herald-2026-12-04',
    )
    .action(async (backup: string, options: { dataDir: string }, command: Command) => {
      const out = createOutput(streams, { json: command.optsWithGlobals<{ json?: boolean }>().json === true });
      const { restoreDataDir } = await import('../backup');
      (await import('../durable-fs')).createOwnerOnly();
      requirePath(backup, '<backup>');
      const dataDir = dataDirOf(options);
      const manifest = await run('restore', () => restoreDataDir(backup, dataDir));
      if (out.json) return out.document(manifest);
      // The manifest is a file anyone could have edited: its time is escaped (CLI probe: an OSC sequence reached the terminal).
      out.line(
        `restored ${shown(backup)} (taken from ${shown(typeof manifest.startedAt === 'string' ? manifest.startedAt : 'an unknown time')}) into ${shown(dataDir)}`,
      );
      out.note('start the gateway on it: its first start rebuilds index.db from the log');
    });
}

/** A refusal of the storage module is the whole message (exit 1); a file system's error is named as such. */
async function run<T>(what: 'backup' | 'restore', work: () => T): Promise<T> {
  const { BackupError } = await import('../backup');
  try {
    return work();
  } catch (err) {
    if (err instanceof BackupError) throw new ReportedError(`herald: ${err.message}`);
    throw new ReportedError(`herald: the ${what} failed: ${err instanceof Error ? err.message : String(err)}`);
  }
}

function formatBytes(bytes: number): string {
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}
