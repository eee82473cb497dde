import dns from 'node:dns';
import net, { type LookupFunction } from 'node:net';

/**
 * SSRF protection (`HERALD_SINK_ALLOW_PRIVATE=false`): which addresses a sink may not reach. Both sides
 * read it: the subscriptions service when a sink is set (`subscriptions/sink-policy.ts`), delivery when
 * it connects (a host name can resolve elsewhere later: DNS rebinding). It imports neither side.
 */

export type RestrictedKind = 'loopback' | 'private' | 'link-local' | 'unspecified' | 'multicast';

const RANGES: [RestrictedKind, string, number, 'ipv4' | 'ipv6'][] = [
  ['loopback', '127.0.0.0', 8, 'ipv4'],
  ['loopback', '::1', 128, 'ipv6'],
  ['private', '10.0.0.0', 8, 'ipv4'], // RFC 1918
  ['private', '172.16.0.0', 12, 'ipv4'],
  ['private', '192.168.0.0', 16, 'ipv4'],
  ['private', 'fc00::', 7, 'ipv6'], // unique local, RFC 4193
  ['private', 'fec0::', 10, 'ipv6'], // site-local (deprecated, still routed by some stacks)
  ['private', '100.64.0.0', 10, 'ipv4'], // shared address space (RFC 6598); some clouds' metadata lives here
  ['private', '198.18.0.0', 15, 'ipv4'], // benchmarking networks (RFC 2544)
  // IETF protocol assignments (RFC 6890: not globally reachable); Oracle Cloud Classic's instance metadata is 192.0.0.192.
  ['private', '192.0.0.0', 24, 'ipv4'],
  // Local-use IPv4/IPv6 translation (RFC 8215): where the IPv4 address sits depends on the operator's prefix.
  ['private', '64:ff9b:1::', 48, 'ipv6'],
  ['link-local', '169.254.0.0', 16, 'ipv4'], // cloud metadata (169.254.169.254) lives here
  ['link-local', 'fe80::', 10, 'ipv6'],
  ['unspecified', '0.0.0.0', 8, 'ipv4'], // "this network": Linux connects 0.0.0.0 to the local host
  ['unspecified', '::', 128, 'ipv6'],
  ['multicast', '224.0.0.0', 4, 'ipv4'],
  ['multicast', '255.255.255.255', 32, 'ipv4'], // limited broadcast
  ['multicast', 'ff00::', 8, 'ipv6'],
];

const LISTS = new Map<RestrictedKind, net.BlockList>();
for (const [kind, address, prefix, family] of RANGES) {
  let list = LISTS.get(kind);
  if (!list) LISTS.set(kind, (list = new net.BlockList()));
  list.addSubnet(address, prefix, family);
  // IPv4-mapped IPv6 (::ffff:127.0.0.1) reaches the IPv4 address. Node's BlockList matches these
  // against IPv4 rules already; the explicit rule keeps that true whatever the Node version.
  if (family === 'ipv4') list.addSubnet(`::ffff:${address}`, 96 + prefix, 'ipv6');
}

/** What kind of restricted address `ip` is, or null when a sink may reach it. Not an IP address: null. */
export function restrictedKind(ip: string): RestrictedKind | null {
  const family = net.isIP(ip);
  if (family === 0) return null;
  for (const [kind, list] of LISTS) if (list.check(ip, family === 4 ? 'ipv4' : 'ipv6')) return kind;
  // IPv6 forms that carry an IPv4 address a stack or translator reaches: IPv4-compatible (::/96), SIIT's
  // IPv4-translated (::ffff:0:0/96), NAT64 (64:ff9b::/96), 6to4 (2002::/16) and Teredo (2001::/32).
  const embedded = family === 6 ? embeddedIpv4(ip) : undefined;
  return embedded === undefined ? null : restrictedKind(embedded);
}

function embeddedIpv4(ip: string): string | undefined {
  const groups = expandIpv6(ip);
  if (!groups) return undefined;
  const v4 = (hi: number, lo: number) => `${hi >> 8}.${hi & 0xff}.${lo >> 8}.${lo & 0xff}`;
  if (groups[0] === 0x64 && groups[1] === 0xff9b && groups.slice(2, 6).every((g) => g === 0)) return v4(groups[6]!, groups[7]!);
  if (groups[0] === 0x2002) return v4(groups[1]!, groups[2]!);
  if (groups.slice(0, 6).every((g) => g === 0)) return v4(groups[6]!, groups[7]!); // ::a.b.c.d (:: and ::1 are matched above)
  if (groups.slice(0, 4).every((g) => g === 0) && groups[4] === 0xffff && groups[5] === 0) return v4(groups[6]!, groups[7]!);
  if (groups[0] === 0x2001 && groups[1] === 0) return v4(~groups[6]! & 0xffff, ~groups[7]! & 0xffff); // Teredo: the client's, inverted
  return undefined;
}

/** The eight 16-bit groups of an IPv6 address (with `::` and a dotted IPv4 tail expanded). */
function expandIpv6(ip: string): number[] | undefined {
  let text = ip.toLowerCase();
  const dotted = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (dotted) {
    const [a, b, c, d] = dotted[1]!.split('.').map(Number) as [number, number, number, number];
    text = text.slice(0, -dotted[1]!.length) + `${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head, tail] = text.split('::') as [string, string | undefined];
  const parse = (part: string) => (part === '' ? [] : part.split(':').map((g) => parseInt(g, 16)));
  const left = parse(head);
  const right = tail === undefined ? [] : parse(tail);
  const groups = tail === undefined ? left : [...left, ...new Array<number>(8 - left.length - right.length).fill(0), ...right];
  return groups.length === 8 && groups.every((g) => Number.isInteger(g) && g >= 0 && g <= 0xffff) ? groups : undefined;
}

export const SINK_NOT_ALLOWED = 'HERALD_SINK_NOT_ALLOWED';

/** A connection refused by the policy: delivery dead-letters the event (`sink_not_allowed`) instead of retrying. */
export class SinkNotAllowedError extends Error {
  override name = 'SinkNotAllowedError';
  readonly code = SINK_NOT_ALLOWED;
  constructor(
    readonly host: string,
    readonly address: string,
    readonly kind: RestrictedKind,
  ) {
    super(
      `${host === address ? address : `${host} resolves to ${address}, which`} is a ${kind} address, and HERALD_SINK_ALLOW_PRIVATE=false refuses it`,
    );
  }
}

/** `[::1]` (a URL's hostname) → `::1`. */
export const unbracket = (host: string) => host.replace(/^\[(.*)\]$/, '$1');

/** The first restricted address among `addresses`, as an error; undefined when all are allowed. */
export function refusal(host: string, addresses: string[]): SinkNotAllowedError | undefined {
  for (const address of addresses) {
    const kind = restrictedKind(address);
    if (kind) return new SinkNotAllowedError(host, address, kind);
  }
  return undefined;
}

/** An IP literal host refused by the policy, as an error (a literal is never looked up, so check it directly). */
export function refuseLiteral(host: string): SinkNotAllowedError | undefined {
  const ip = unbracket(host);
  return net.isIP(ip) ? refusal(ip, [ip]) : undefined;
}

/**
 * A `lookup` for `net.connect` that fails with {@link SinkNotAllowedError} when any address the
 * name resolves to is restricted. The addresses checked are the ones connected to, so a name that
 * answers differently from one lookup to the next cannot slip past.
 */
export function guardedLookup(base: typeof dns.lookup = dns.lookup): LookupFunction {
  return (hostname, options, callback) => {
    base(hostname, { ...options, all: true }, (err, addresses) => {
      if (err) return callback(err, '', 0);
      const list = addresses as unknown as dns.LookupAddress[];
      const refused = refusal(
        hostname,
        list.map((a) => a.address),
      );
      if (refused) return callback(refused as NodeJS.ErrnoException, '', 0);
      if (options.all) return callback(null, list);
      if (list.length === 0) return callback(Object.assign(new Error(`no address for ${hostname}`), { code: 'ENOTFOUND' }), '', 0);
      callback(null, list[0]!.address, list[0]!.family);
    });
  };
}
