"""Console forms: they render the controls; the rules stay with the API serializers and the domain."""

from django import forms

from services.api.serializers import ServiceSerializer
from services.choices import AVAILABLE_RUNTIMES, Runtime
from versions.api.serializers import EnvironmentSerializer


def _add_serializer_errors(form: forms.Form, errors: dict) -> None:
    for field, messages in errors.items():
        for message in messages if isinstance(messages, list) else [messages]:
            form.add_error(field if field in form.fields else None, str(message))


class ServiceForm(forms.Form):
    name = forms.CharField(
        max_length=40,
        help_text="2 to 40 lowercase letters, digits and dashes, starting with a letter.",
        widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false", "autofocus": True}),
    )
    # The list offers the runtimes this release runs; the serializer says why another one is refused.
    runtime = forms.ChoiceField(choices=Runtime.choices)

    def __init__(self, *args, request, **kwargs):
        super().__init__(*args, **kwargs)
        self.request = request
        self.fields["runtime"].widget.choices = [c for c in Runtime.choices if c[0] in AVAILABLE_RUNTIMES]

    def clean(self):
        data = super().clean()
        if self.errors:
            return data
        # The API's own rules (name pattern, unique per owner, available runtimes): not written twice.
        serializer = ServiceSerializer(data=data, context={"request": self.request})
        if not serializer.is_valid():
            _add_serializer_errors(self, serializer.errors)
            return data
        return serializer.validated_data


class DeleteServiceForm(forms.Form):
    confirm_name = forms.CharField(label="Type the name of the service to confirm", max_length=40)

    def __init__(self, *args, service, **kwargs):
        super().__init__(*args, **kwargs)
        self.service = service
        self.fields["confirm_name"].widget.attrs.update(autocomplete="off", spellcheck="false", autofocus=True)

    def clean_confirm_name(self):
        name = self.cleaned_data["confirm_name"].strip()
        if name != self.service.name:
            raise forms.ValidationError(f"That is not the name of this service; type {self.service.name} exactly.")
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

    def __init__(self, *args, service, **kwargs):
        super().__init__(*args, **kwargs)
        self.service = service

    def clean(self):
        data = super().clean()
        if self.errors:
            return data
        payload = {"name": data["name"]}
        if data.get("preview_key"):
            payload["preview_key"] = data["preview_key"]
        serializer = EnvironmentSerializer(data=payload, context={"service": self.service})
        if not serializer.is_valid():
            _add_serializer_errors(self, serializer.errors)
            return data
        validated = serializer.validated_data
        return {"name": validated["name"], "preview_key": validated.get("preview_key", "")}


class DeployForm(forms.Form):
    version = forms.ModelChoiceField(queryset=None, empty_label=None, label="Version")

    def __init__(self, *args, service, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["version"].queryset = service.versions.all()


class UploadForm(forms.Form):
    archive = forms.FileField(allow_empty_file=True, label="Archive")
    # Checked by versions.storage.store_version, which names the reason when it refuses one.
    label = forms.CharField(required=False, max_length=40, label="Label (optional)")
