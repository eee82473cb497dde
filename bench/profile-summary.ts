/**
 * Top self-time functions of a V8 CPU profile:
 *   node dist-bench/profile-summary.js file.cpuprofile [topN] [--under=functionName]
 * (Profiles of missed targets land in bench/results/ during `npm run bench`.)
 */
import { formatProfile, summarizeProfile } from './lib/profile';

const args = process.argv.slice(2);
const under = args.find((a) => a.startsWith('--under='))?.slice('--under='.length);
const [file, top] = args.filter((a) => !a.startsWith('--'));
if (!file) {
  process.stderr.write('usage: node dist-bench/profile-summary.js <file.cpuprofile> [topN] [--under=functionName]\n');
  process.exit(2);
}
process.stdout.write(`${formatProfile(summarizeProfile(file, { under }, Number(top ?? 20)))}\n`);
