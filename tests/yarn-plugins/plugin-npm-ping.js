// `yarn npm ping`: GET /-/ping on the configured registry (sluice's conformance tests).
module.exports = {
  name: "@yarnpkg/plugin-npm-ping",
  factory(require) {
    const { BaseCommand } = require("@yarnpkg/cli");
    const { Configuration, StreamReport } = require("@yarnpkg/core");
    const { npmConfigUtils, npmHttpUtils } = require("@yarnpkg/plugin-npm");
    const { Option } = require("clipanion");

    class PingCommand extends BaseCommand {
      static paths = [["npm", "ping"]];
      json = Option.Boolean("--json", false);

      async execute() {
        const configuration = await Configuration.find(this.context.cwd, this.context.plugins);
        const registry = npmConfigUtils.getDefaultRegistry({ configuration });
        const report = await StreamReport.start(
          { configuration, json: this.json, stdout: this.context.stdout },
          async (report) => {
            const started = Date.now();
            const answer = await npmHttpUtils.get("/-/ping", {
              configuration,
              registry,
              jsonResponse: true,
            });
            report.reportInfo(null, `PONG ${Date.now() - started}ms from ${registry}`);
            report.reportJson({ registry, answer });
          },
        );
        return report.exitCode();
      }
    }

    return { default: { commands: [PingCommand] } };
  },
};
