"""Console forms: they render the controls; the rules stay on the models (`clean()`), which the
workflows check and the views put back on the form with `add_error(None, error)`."""

from django import forms
from django.contrib.auth.forms import UserCreationForm
from django.contrib.auth.password_validation import password_validators_help_texts

from services.choices import Runtime


class ServiceForm(forms.Form):
    name = forms.CharField(
        max_length=40,
        help_text="2 to 40 lowercase letters, digits and dashes, starting with a letter.",
        widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false", "autofocus": True}),
    )
    runtime = forms.ChoiceField(choices=Runtime.choices)


class DeleteServiceForm(forms.Form):
    confirm_name = forms.CharField(label="Type the name of the service to confirm", max_length=40)

    def __init__(self, *args, service, what: str = "service", linking=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.service, self.what = service, what  # `service`: a service, or an application
        self.fields["confirm_name"].label = f"Type the name of the {what} to confirm"
        self.fields["confirm_name"].widget.attrs.update(autocomplete="off", spellcheck="false", autofocus=True)
        if linking:  # the services that link it: deleting it anyway is a choice of its own
            names = ", ".join(s.name for s in linking)
            self.fields["force"] = forms.BooleanField(
                required=False, label=f"Delete anyway, leaving {names} with a link to nothing"
            )

    def clean_confirm_name(self):
        name = self.cleaned_data["confirm_name"].strip()
        if name != self.service.name:
            raise forms.ValidationError(f"That is not the name of this {self.what}; type {self.service.name} exactly.")
        return name


class EnvironmentForm(forms.Form):
    name = forms.CharField(
        label="Environment name",
        max_length=40,
        help_text="For example staging or feature-x.",
        widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
    )
    preview_key = forms.CharField(
        label="Preview key (optional)",
        max_length=128,
        required=False,
        help_text="Leave empty for a random, unguessable key.",
        widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
    )
    database_copy = forms.BooleanField(
        label="Its own copy of the linked databases",
        required=False,
        help_text="Made from production's at its first deploy, dropped with it: previews never write "
        "production's data. A swap moves no data.",
    )


class SettingsForm(forms.Form):
    """An environment's settings as two lists of NAME=value lines; versions.models.clean_settings
    (through workflows.environments) judges them."""

    travelling = forms.CharField(
        label="Travelling settings",
        required=False,
        help_text="One NAME=value per line. They follow the code version on a swap.",
        widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false", "autocomplete": "off"}),
    )
    sticky = forms.CharField(
        label="Sticky settings",
        required=False,
        help_text="One NAME=value per line. They stay with this environment on a swap.",
        widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false", "autocomplete": "off"}),
    )

    @staticmethod
    def initial_for(settings: dict) -> dict:
        lines = {True: [], False: []}
        for name, setting in sorted(settings.items()):
            lines[setting["sticky"]].append(f"{name}={setting['value']}")
        return {"travelling": "\n".join(lines[False]), "sticky": "\n".join(lines[True])}

    def settings(self) -> dict:
        """The lines as settings; blank lines and lines starting with # are skipped."""
        found, errors = {}, []
        for field, sticky in (("travelling", False), ("sticky", True)):
            for number, line in enumerate(self.cleaned_data[field].splitlines(), 1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                name, equals, value = line.partition("=")
                name = name.strip()
                if not equals or not name:
                    errors.append(f"{field} settings, line {number}: NAME=value expected")
                elif name in found:
                    errors.append(f"{name} is set twice")
                else:
                    found[name] = {"value": value, "sticky": sticky}
        if errors:
            raise forms.ValidationError(errors)
        return found


class DeployForm(forms.Form):
    version = forms.ModelChoiceField(queryset=None, empty_label=None, label="Version")

    def __init__(self, *args, service, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["version"].queryset = service.versions.all()


class UploadForm(forms.Form):
    archive = forms.FileField(allow_empty_file=True, label="Archive")
    # Checked by versions.storage.store_version, which names the reason when it refuses one.
    label = forms.CharField(required=False, max_length=40, label="Label (optional)")


class FirstAccountForm(UserCreationForm):
    """The first account: a username, an optional email, a password checked by Django's password
    validators (AUTH_PASSWORD_VALIDATORS); from elsewhere than this machine, the one-time code too.
    workflows.first_account decides who may make it and makes it."""

    code = forms.CharField(
        label="One-time code",
        max_length=40,
        help_text="Printed by manage.py up (and ./run up) at start, while no account exists.",
        widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
    )

    class Meta(UserCreationForm.Meta):
        fields = ("username", "email")

    def __init__(self, *args, needs_code: bool, **kwargs):
        super().__init__(*args, **kwargs)
        if not needs_code:
            del self.fields["code"]
        self.fields["username"].widget.attrs.update(autofocus=True, spellcheck="false")
        self.fields["email"].help_text = "Optional."
        # Django's own help is HTML; _field.html shows plain text.
        self.fields["password1"].help_text = " ".join(password_validators_help_texts())


class AutoscalingForm(forms.Form):
    """The controls of a service's autoscaling policy; workflows.autoscale.configure checks them
    (the model's rules) and the view puts its refusal back on the fields."""

    enabled = forms.BooleanField(required=False, label="Autoscale this service")
    target_p95_ms = forms.IntegerField(
        label="p95 target (ms)", help_text="Keep production's 95th percentile response time under this."
    )
    min_nodes = forms.IntegerField(label="Fewest backend nodes")
    max_nodes = forms.IntegerField(label="Most backend nodes", help_text="Within your node quota.")
    cooldown_s = forms.IntegerField(label="Cool-down (s)", help_text="How long after a change before scaling in.")


class ServiceOptionsForm(forms.Form):
    """A service's options (workflows.lifecycle.OPTIONS); lifecycle.update checks them by the
    model's rules, the API's too, and the view puts its refusal back on the fields."""

    health_check_path = forms.CharField(
        label="Health check path", max_length=200, help_text="The routers ask every instance for it; / by default."
    )
    health_check_status = forms.IntegerField(
        label="Expected status",
        required=False,
        help_text="One status from 200 to 399; empty: any status below 500 passes.",
    )
    java_heap_mb = forms.IntegerField(label="JVM heap (MB)", help_text="Instances started from now on have it.")

    def __init__(self, *args, service, **kwargs):
        super().__init__(*args, **kwargs)
        if service.runtime != Runtime.JAVA:
            del self.fields["java_heap_mb"]  # only java services run a JVM
        for field in self.fields.values():
            field.widget.attrs.update(autocomplete="off", spellcheck="false")


class BackupPolicyForm(forms.Form):
    """A data service's backup policy; workflows.backups.configure checks it by the model's rules."""

    enabled = forms.BooleanField(required=False, label="Take backups on a schedule")
    every_hours = forms.IntegerField(label="Every (hours)")
    keep_days = forms.IntegerField(label="Keep (days)", help_text="The newest verified backup is always kept.")


class RestoreForm(forms.Form):
    """A restore: a backup, or (PostgreSQL) a moment; in place, or into a new service."""

    backup = forms.IntegerField(required=False, label="Backup (id)", widget=forms.NumberInput(attrs={"min": 1}))
    time = forms.DateTimeField(
        required=False,
        label="Or a moment (PostgreSQL)",
        help_text="ISO 8601 with its offset, within the recovery window, e.g. 2026-12-07T20:15:00+00:00",
    )
    into = forms.CharField(
        required=False,
        max_length=40,
        label="Into a new service",
        help_text="Empty: in place (same URL and credentials; the server's data is replaced).",
    )
    confirm_name = forms.CharField(
        required=False,
        max_length=40,
        label="In place: type the name of the service to confirm",
        widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
    )

    def __init__(self, *args, service, **kwargs):
        super().__init__(*args, **kwargs)
        self.service = service

    def clean(self):
        given = super().clean()
        # In place, the server's data is replaced and the writes after the restore point are
        # gone: as for a deletion, the name typed is the confirmation.
        if not given.get("into") and (given.get("confirm_name") or "").strip() != self.service.name:
            self.add_error(
                "confirm_name",
                f"A restore in place replaces the data of {self.service.name}: type {self.service.name} "
                "to confirm, or restore into a new service.",
            )
        return given
