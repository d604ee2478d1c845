// Validate an OpenAPI document with a validator we did not write (@readme/openapi-parser):
// the OpenAPI 3.1 schema plus its extra checks (unique operationIds, parameters, …).
// Usage: node validate_openapi.mjs <file>. Exit 0 when valid; errors on stderr otherwise.
import { readFileSync } from 'node:fs';
import { validate, compileErrors } from '@readme/openapi-parser';

const file = process.argv[2];
const doc = JSON.parse(readFileSync(file, 'utf8'));
if (!String(doc.openapi).startsWith('3.1')) {
  console.error(`expected an OpenAPI 3.1 document, got openapi=${doc.openapi}`);
  process.exit(1);
}
const result = await validate(doc);
if (!result.valid) {
  console.error(compileErrors(result));
  process.exit(1);
}
for (const w of result.warnings) console.error(`warning: ${w.message}`);
console.log(`valid ${result.specification} ${doc.openapi}: ${Object.keys(doc.paths).length} paths`);
