#!/usr/bin/env node
// Lints Cypher files as Neo4j 5 Cypher with Neo4j's own tooling (@neo4j-cypher/language-support):
// its ANTLR parser plus Neo4j's semantic analysis (the Cypher front-end compiled to JavaScript).
//
//   node tools/cypher-lint/lint.mjs [--any-params] FILE...
//
// Prints one JSON object per file, one per line, in argument order:
//   {"file": ..., "errors": [{"message", "line", "column"}], "warnings": [...]}
// line and column are 1-based. Exit status: 0 no errors, 1 some file has an error, 2 bad usage or the
// tooling is broken (e.g. Neo4j's semantic analysis did not run).
//
// Parameters: a `$name` must be declared by a `// param: name ...` header line of its file, as the
// project's loader requires; --any-params accepts every parameter (for ad-hoc queries).
// Functions: Neo4j 5's built-in function registry shipped with the package (testData.mockSchema,
// built-ins only), so APOC, user-defined or FalkorDB-only functions are reported as missing. Procedures: the
// package's registry restricted to Neo4j's own db.*/dbms.*/tx.* procedures (e.g. db.index.fulltext.queryNodes).
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';

const CYPHER_VERSION = 'CYPHER 5';
const PARAM_LINE = /^\s*\/\/\s*param:\s*([A-Za-z_][A-Za-z0-9_]*)\b/;

async function loadTooling() {
  const require = createRequire(import.meta.url);
  // The package's ESM build has extension-less imports Node cannot resolve: use its CommonJS build.
  const ls = require('@neo4j-cypher/language-support');
  // The bare semantic analysis module the package wraps. lintCypherQuery swallows any exception it
  // throws (and then reports nothing), so each statement is also run through it to prove it ran.
  const pkgRoot = join(dirname(require.resolve('@neo4j-cypher/language-support')), '..', '..');
  const semantic = await import(
    pathToFileURL(join(pkgRoot, 'dist/esm/project/language-support/src/syntaxValidation/semanticAnalysis.js')).href
  );
  const builtins = Object.fromEntries(
    Object.entries(ls.testData.mockSchema.functions[CYPHER_VERSION]).filter(([, f]) => f.isBuiltIn),
  );
  // Procedures: Neo4j's own namespaces only (db.*, dbms.*, tx.*), not the APOC/GDS ones the mock schema also lists.
  const procedures = Object.fromEntries(
    Object.entries(ls.testData.mockSchema.procedures[CYPHER_VERSION]).filter(([name]) => /^(db|dbms|tx)\./.test(name)),
  );
  semantic.updateSignatureResolver({ procedures: Object.values(procedures), functions: Object.values(builtins) },
    CYPHER_VERSION);
  return { ls, semantic, builtins, procedures };
}

function headerParams(text) {
  const params = {};
  for (const line of text.split('\n')) {
    const m = PARAM_LINE.exec(line);
    if (m) params[m[1]] = null;
  }
  return params;
}

function toItem(d) {
  return { message: d.message, line: d.range.start.line + 1, column: d.range.start.character + 1 };
}

function lintText(tooling, text, { anyParams }) {
  const { ls, semantic, builtins, procedures } = tooling;
  const errors = [];
  const warnings = [];
  if (text.trim().length === 0) {
    errors.push({ message: 'empty file: no Cypher statement', line: 1, column: 1 });
    return { errors, warnings };
  }
  const parameters = anyParams ? new Proxy({}, { get: () => null }) : headerParams(text);
  const schema = { defaultLanguage: CYPHER_VERSION, functions: { [CYPHER_VERSION]: builtins },
    procedures: { [CYPHER_VERSION]: procedures }, parameters };
  for (const d of ls.lintCypherQuery(text, schema)) {
    (d.severity === 1 ? errors : warnings).push(toItem(d));
  }
  // Guard against a silent pass: re-run the semantic analysis on each statement without the wrapper.
  for (const st of ls.parserWrapper.parse(text).statementsParsing) {
    if (st.command.type !== 'cypher' || st.command.statement.length === 0) continue;
    try {
      const r = semantic.analyzeQuery(st.command.statement, st.cypherVersion ?? CYPHER_VERSION);
      if (!Array.isArray(r.errors) || !Array.isArray(r.notifications)) throw new Error('malformed result');
    } catch (e) {
      errors.push({
        message: `Neo4j semantic analysis failed to run on this statement: ${e}`,
        line: st.command.start.line,
        column: st.command.start.column + 1,
      });
    }
  }
  return { errors, warnings };
}

function selfCheck(tooling) {
  // Neo4j's semantic analysis, not the grammar, is what reports an undefined variable.
  try {
    const { errors } = lintText(tooling, 'MATCH (n) RETURN lint_probe_undefined AS x', { anyParams: true });
    return errors.some((e) => e.message.includes('Variable `lint_probe_undefined` not defined'));
  } catch (e) {
    process.stderr.write(`cypher-lint: ${e}\n`);
    return false;
  }
}

// Lints `files`; null when the self-check fails.
async function lintFiles(files, anyParams) {
  let tooling;
  try {
    tooling = await loadTooling();
  } catch (e) {
    process.stderr.write(`cypher-lint: cannot load @neo4j-cypher/language-support: ${e}\n`);
    return null;
  }
  if (!selfCheck(tooling)) return null;
  return files.map((file) => {
    let text;
    try {
      text = readFileSync(file, 'utf8');
    } catch (e) {
      return { file, errors: [{ message: `cannot read file: ${e.message}`, line: 0, column: 0 }], warnings: [] };
    }
    try {
      return { file, ...lintText(tooling, text, { anyParams }) };
    } catch (e) {
      return { file, errors: [{ message: `the linter crashed on this file: ${e}`, line: 0, column: 0 }], warnings: [] };
    }
  });
}

function usage() {
  process.stderr.write('usage: node tools/cypher-lint/lint.mjs [--any-params] FILE...\n');
  process.exit(2);
}

const args = process.argv.slice(2);
const anyParams = args.includes('--any-params');
const files = args.filter((a) => a !== '--any-params');
if (files.length === 0 || files.some((f) => f.startsWith('--'))) usage();
const results = await lintFiles(files, anyParams);
if (results === null) {
  process.stderr.write('cypher-lint: Neo4j semantic analysis did not run (probe query not reported); '
    + 'reinstall with npm ci --prefix tools/cypher-lint\n');
  process.exit(2);
}
for (const r of results) process.stdout.write(JSON.stringify(r) + '\n');
process.exit(results.some((r) => r.errors.length > 0) ? 1 : 0);
