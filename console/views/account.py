"""The account: signing in, making the first account, the user's API tokens."""

from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from console.errors import not_found, refusals
from console.forms import FirstAccountForm
from services import tokens
from workflows import first_account


class LoginView(auth_views.LoginView):
    """Django's sign-in page; while no account exists, the page that makes the first one instead."""

    template_name = "console/login.html"
    redirect_authenticated_user = True

    def dispatch(self, request, *args, **kwargs):
        if first_account.is_open():
            return redirect("console:first-account")
        return super().dispatch(request, *args, **kwargs)


@require_http_methods(["GET", "POST"])
def first_account_create(request):
    """Make the first account, a staff superuser, then sign it in. Gone (to the sign-in page) once
    any account exists; refused (403, nothing stored) from elsewhere than this machine without
    the one-time code `manage.py up` printed."""
    if not first_account.is_open():
        first_account.discard_code()  # made by `createsuperuser` meanwhile: the code dies with the page
        return redirect("console:login")
    local = first_account.is_local(request.META)
    form = FirstAccountForm(request.POST or None, needs_code=not local)
    context = {"form": form, "local": local, "refusal": ""}
    if request.method == "GET":
        return render(request, "console/first_account.html", context)
    code = request.POST.get("code", "")
    try:
        first_account.admission(request.META, code)  # refused before the rest of the form is even read
        if not form.is_valid():
            return render(request, "console/first_account.html", context, status=400)
        data = form.cleaned_data
        user = first_account.create(data["username"], data["email"], data["password1"], request.META, code)
    except first_account.FirstAccountRefused as exc:
        context.update(refusal=str(exc), form=FirstAccountForm(needs_code=not local))
        return render(request, "console/first_account.html", context, status=exc.http_status)
    except first_account.FirstAccountExists as exc:
        messages.info(request, str(exc))
        return redirect("console:login")
    # Two backends since axes: name the one that made the account.
    login(request, user, backend="django.contrib.auth.backends.ModelBackend")
    messages.success(request, f"Welcome, {user.get_username()}: your account is staff, and may use the admin site.")
    return redirect("console:dashboard")


@login_required
@require_GET
def token_list(request):
    """The user's API tokens (what `conpaas login` and the API issued), without their secrets."""
    return render(request, "console/tokens.html", {"tokens": tokens.live_tokens(request.user)})


@login_required
@require_POST
@refusals(not_found)  # not the user's, or already gone
def token_revoke(request, token_pk: int):
    token = tokens.revoke(request.user, token_pk)
    messages.success(request, f"Revoked the token starting {token.prefix}; it no longer signs anything in.")
    return redirect("console:tokens")
