from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import path

from webapp import (
    views,
    views_annotate,
    views_console,
    views_exports,
    views_gold,
    views_judges,
    views_quality,
    views_routing,
)
from webapp.api import api
from webapp.ratelimit_login import RateLimitedLoginView

urlpatterns = [
    path("", views.home, name="home"),
    path("login/", RateLimitedLoginView.as_view(), name="login"),  # 429 after too many failures
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("healthz", views.healthz, name="healthz"),
    path("p/<slug:slug>/", views.project_detail, name="project"),
    path("p/<slug:slug>/items/<int:item_id>/", views.item_detail, name="item"),
    path("p/<slug:slug>/annotate/", views_annotate.annotate, name="annotate"),
    path("p/<slug:slug>/annotate/<int:assignment_id>/submit", views_annotate.annotate_submit, name="annotate-submit"),
    path("p/<slug:slug>/annotate/<int:assignment_id>/skip", views_annotate.annotate_skip, name="annotate-skip"),
    path("p/<slug:slug>/annotations/<int:annotation_id>/edit", views_annotate.annotation_edit, name="annotation-edit"),
    path("p/<slug:slug>/judging/", views_judges.judging_page, name="judging"),
    path("p/<slug:slug>/judging/judges", views_judges.judge_create, name="judge-create"),
    path("p/<slug:slug>/judging/runs", views_judges.run_start, name="run-start"),
    path("p/<slug:slug>/judging/runs/<int:run_id>/", views_judges.run_detail, name="run"),
    path("p/<slug:slug>/judging/runs/<int:run_id>/cancel", views_judges.run_cancel, name="run-cancel"),
    path("p/<slug:slug>/judging/runs/<int:run_id>/retry", views_judges.run_retry, name="run-retry"),
    path("p/<slug:slug>/exports/", views_exports.exports_page, name="exports"),
    path("p/<slug:slug>/exports/new", views_exports.export_start, name="export-start"),
    path("p/<slug:slug>/exports/v<int:version>/<path:name>", views_exports.export_download, name="export-download"),
    path("p/<slug:slug>/routing/", views_routing.routing_page, name="routing"),
    path("p/<slug:slug>/routing/features", views_routing.features_start, name="routing-features"),
    path("p/<slug:slug>/routing/route", views_routing.routing_start, name="routing-start"),
    path("p/<slug:slug>/routing/preview", views_routing.routing_preview, name="routing-preview"),
    path("p/<slug:slug>/routing/curve", views_routing.routing_curve, name="routing-curve"),
    path("p/<slug:slug>/routing/tags", views_routing.tagging_start, name="routing-tags"),
    path("p/<slug:slug>/routing/proxy", views_routing.proxy_start, name="routing-proxy"),
    # The manager console (views_console.py, docs/console.md).
    path("projects/new/", views_console.project_new, name="project-new"),
    path("projects/new/preview", views_console.project_new_preview, name="project-new-preview"),
    path("p/<slug:slug>/edit/", views_console.project_edit, name="project-edit"),
    path("p/<slug:slug>/edit/preview", views_console.project_edit_preview, name="project-edit-preview"),
    path("p/<slug:slug>/state", views_console.project_state, name="project-state"),
    path("p/<slug:slug>/upload/", views_console.upload_page, name="upload"),
    path("p/<slug:slug>/upload/new", views_console.upload_post, name="upload-post"),
    path("p/<slug:slug>/upload/<str:token>/", views_console.upload_report, name="upload-report"),
    path("p/<slug:slug>/upload/<str:token>/import", views_console.upload_import, name="upload-import"),
    path("people/", views_console.people, name="people"),
    path("people/new", views_console.person_new, name="person-new"),
    path("people/add", views_console.person_add, name="person-add"),
    path("people/<int:user_id>/", views_console.person, name="person"),
    path("people/<int:user_id>/profile", views_console.person_profile, name="person-profile"),
    path("people/<int:user_id>/active", views_console.person_active, name="person-active"),
    path("people/<int:user_id>/memberships", views_console.person_membership, name="person-membership"),
    path(
        "people/<int:user_id>/memberships/remove",
        views_console.person_membership_remove,
        name="person-membership-remove",
    ),
    # Quality, progress and costs (views_quality.py, docs/quality.md).
    path("p/<slug:slug>/quality/", views_quality.quality_page, name="quality"),
    path("p/<slug:slug>/progress/", views_quality.progress_page, name="progress"),
    path("p/<slug:slug>/costs/", views_quality.costs_page, name="costs"),
    # Gold items and the qualification test (views_gold.py, docs/annotating.md).
    path("p/<slug:slug>/gold/", views_gold.gold_page, name="gold"),
    path("p/<slug:slug>/gold/settings", views_gold.gold_settings, name="gold-settings"),
    path("p/<slug:slug>/gold/items", views_gold.gold_item_save, name="gold-item-save"),
    path("p/<slug:slug>/gold/items/<int:item_id>/remove", views_gold.gold_item_remove, name="gold-item-remove"),
    path("p/<slug:slug>/gold/members/<int:membership_id>/unpause", views_gold.gold_unpause, name="gold-unpause"),
    path("p/<slug:slug>/gold/members/<int:membership_id>/qualify", views_gold.gold_qualify, name="gold-qualify"),
    path("api/", api.urls),
    path("admin/", admin.site.urls),
]
