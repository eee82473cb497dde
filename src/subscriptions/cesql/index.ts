// Placeholder until the CESQL implementation lands: every expression is a parse error.
export class CesqlError extends Error {
  constructor(
    readonly kind: 'parse' | 'math' | 'cast' | 'missingAttribute' | 'missingFunction' | 'functionEvaluation',
    message: string,
  ) {
    super(message);
  }
}
export interface CesqlExpression {
  evaluate(event: Record<string, string | number | boolean>): { value: string | number | boolean; errors: CesqlError[] };
}
export function compileCesql(_expression: string): CesqlExpression {
  throw new CesqlError('parse', 'the sql dialect is not available yet');
}
export function cesqlMatches(_expr: CesqlExpression, _event: Record<string, string | number | boolean>): boolean {
  return false;
}
