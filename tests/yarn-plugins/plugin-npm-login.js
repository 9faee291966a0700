// `yarn npm login --auth-type=legacy --user U --password P --email E`: npm's legacy login
// (PUT /-/user/org.couchdb.user:U with the password in the body, no Basic credentials), the
// token kept in the home .yarnrc.yml as Yarn's own `npm login` keeps it.
module.exports = {
  name: "@yarnpkg/plugin-npm-login",
  factory(require) {
    const { BaseCommand } = require("@yarnpkg/cli");
    const { Configuration, StreamReport } = require("@yarnpkg/core");
    const { npmConfigUtils, npmHttpUtils } = require("@yarnpkg/plugin-npm");
    const { Option, UsageError } = require("clipanion");

    class LoginCommand extends BaseCommand {
      static paths = [["npm", "login"]];
      json = Option.Boolean("--json", false);
      registry = Option.String("--registry");
      authType = Option.String("--auth-type", "legacy");
      user = Option.String("--user,--username");
      password = Option.String("--password");
      email = Option.String("--email");

      async execute() {
        if (this.authType !== "legacy") {
          throw new UsageError("only --auth-type=legacy is offered here");
        }
        if (!this.user || !this.password) {
          throw new UsageError("--user and --password are needed");
        }
        const configuration = await Configuration.find(this.context.cwd, this.context.plugins);
        const registry = npmConfigUtils.normalizeRegistry(
          this.registry ?? npmConfigUtils.getDefaultRegistry({ configuration }),
        );
        const report = await StreamReport.start(
          { configuration, json: this.json, stdout: this.context.stdout },
          async (report) => {
            const id = `org.couchdb.user:${this.user}`;
            const body = {
              _id: id,
              name: this.user,
              password: this.password,
              email: this.email,
              type: "user",
              roles: [],
              date: new Date().toISOString(),
            };
            const answer = await npmHttpUtils.put(`/-/user/${encodeURIComponent(id)}`, body, {
              configuration,
              registry,
              authType: npmHttpUtils.AuthType.NO_AUTH,
              jsonResponse: true,
            });
            const token = answer && answer.token;
            if (typeof token !== "string" || token === "") {
              throw new Error(`${registry} answered no token`);
            }
            await Configuration.updateHomeConfiguration({
              npmRegistries: (current) => {
                const all = current && typeof current === "object" ? current : {};
                const mine = all[registry] && typeof all[registry] === "object" ? all[registry] : {};
                return { ...all, [registry]: { ...mine, npmAuthToken: token } };
              },
            });
            report.reportInfo(null, `Logged in as ${this.user}: token saved to the home .yarnrc.yml`);
          },
        );
        return report.exitCode();
      }
    }

    return { default: { commands: [LoginCommand] } };
  },
};
