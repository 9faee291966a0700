// `yarn npm deprecate <name>[@<range>] <message>`: what `npm deprecate` sends — the full
// document, the message set on each version the range takes (removed when empty), PUT back.
module.exports = {
  name: "@yarnpkg/plugin-npm-deprecate",
  factory(require) {
    const { BaseCommand } = require("@yarnpkg/cli");
    const { Configuration, StreamReport, structUtils } = require("@yarnpkg/core");
    const { npmHttpUtils } = require("@yarnpkg/plugin-npm");
    const { Option } = require("clipanion");
    const semver = require("semver");

    class DeprecateCommand extends BaseCommand {
      static paths = [["npm", "deprecate"]];
      json = Option.Boolean("--json", false);
      spec = Option.String();
      message = Option.String();

      async execute() {
        const configuration = await Configuration.find(this.context.cwd, this.context.plugins);
        const at = this.spec.lastIndexOf("@");
        const name = at > 0 ? this.spec.slice(0, at) : this.spec;
        const range = at > 0 ? this.spec.slice(at + 1) : "*";
        const ident = structUtils.parseIdent(name);
        const path = npmHttpUtils.getIdentUrl(ident);
        const report = await StreamReport.start(
          { configuration, json: this.json, stdout: this.context.stdout },
          async (report) => {
            const document = await npmHttpUtils.get(path, {
              configuration,
              ident,
              authType: npmHttpUtils.AuthType.ALWAYS_AUTH,
              jsonResponse: true,
            });
            const taken = Object.keys(document.versions || {}).filter((version) =>
              semver.satisfies(version, range, { includePrerelease: true }),
            );
            if (taken.length === 0) {
              throw new Error(`no version of ${name} matches ${range}`);
            }
            for (const version of taken) {
              if (this.message === "") {
                delete document.versions[version].deprecated;
              } else {
                document.versions[version].deprecated = this.message;
              }
            }
            await npmHttpUtils.put(path, document, {
              configuration,
              ident,
              authType: npmHttpUtils.AuthType.ALWAYS_AUTH,
              jsonResponse: true,
            });
            for (const version of taken) {
              report.reportInfo(null, `${name}@${version}: ${this.message || "not deprecated"}`);
            }
          },
        );
        return report.exitCode();
      }
    }

    return { default: { commands: [DeprecateCommand] } };
  },
};
