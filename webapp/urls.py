from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import path

from webapp import views, views_annotate

urlpatterns = [
    path("", views.home, name="home"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("healthz", views.healthz, name="healthz"),
    path("p/<slug:slug>/", views.project_detail, name="project"),
    path("p/<slug:slug>/items/<int:item_id>/", views.item_detail, name="item"),
    path("p/<slug:slug>/annotate/", views_annotate.annotate, name="annotate"),
    path("p/<slug:slug>/annotate/<int:assignment_id>/submit", views_annotate.annotate_submit, name="annotate-submit"),
    path("p/<slug:slug>/annotate/<int:assignment_id>/skip", views_annotate.annotate_skip, name="annotate-skip"),
    path("p/<slug:slug>/annotations/<int:annotation_id>/edit", views_annotate.annotation_edit, name="annotation-edit"),
    path("admin/", admin.site.urls),
]
